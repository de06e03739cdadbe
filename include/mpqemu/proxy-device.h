/*
 * x-pci-proxy-dev as the core QMP commands see it: the device lives in
 * hw-proxy.so, so the commands reach its behaviour through its class.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef MPQEMU_PROXY_DEVICE_H
#define MPQEMU_PROXY_DEVICE_H

#include "hw/pci/pci_device.h"

#define TYPE_PCI_PROXY_DEV "x-pci-proxy-dev"
OBJECT_DECLARE_TYPE(PCIProxyDev, PCIProxyDevClass, PCI_PROXY_DEV)

struct PCIProxyDevClass {
    PCIDeviceClass parent_class;

    /*
     * Connects a failed proxy to @devid of the x-remote-process @remote
     * (NULL: the one it had; @devid NULL: the id it had), or to the
     * x-remote-object listening on @socket. See x-reattach-proxy.
     */
    bool (*reattach)(PCIProxyDev *dev, const char *remote, const char *devid,
                     const char *socket, Error **errp);
};

#endif
