/* `loupe bench decode` — placeholder until its issue lands. */
#include "app/app.h"

#include <stdio.h>

int bench_decode(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "loupe: bench decode: not implemented yet\n");
    return APP_EXIT_FAIL;
}
