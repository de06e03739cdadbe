#include "trace/trace-mpqemu_hw_proxy.h"
