/* ingest — placeholder translation unit until the ingest issue lands. */
#include "ingest/ingest.h"
