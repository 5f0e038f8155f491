/* `loupe bench ingest` — placeholder until its issue lands. */
#include "app/app.h"

#include <stdio.h>

int bench_ingest(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "loupe: bench ingest: not implemented yet\n");
    return APP_EXIT_FAIL;
}
