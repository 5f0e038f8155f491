/* `loupe bench niah` — placeholder until its issue lands. */
#include "app/app.h"

#include <stdio.h>

int bench_niah(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "loupe: bench niah: not implemented yet\n");
    return APP_EXIT_FAIL;
}
