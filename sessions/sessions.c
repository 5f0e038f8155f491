/* sessions — placeholder translation unit until the sessions issue lands. */
#include "sessions/sessions.h"
