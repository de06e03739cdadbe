#include "trace/trace-mpqemu_remote_machine.h"
