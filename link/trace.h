#include "trace/trace-mpqemu_link.h"
