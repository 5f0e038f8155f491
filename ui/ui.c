/* ui — placeholder translation unit until the TUI issue lands. */
#include "ui/ui.h"
