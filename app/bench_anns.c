/* `loupe bench anns` — placeholder until its issue lands. */
#include "app/app.h"

#include <stdio.h>

int bench_anns(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "loupe: bench anns: not implemented yet\n");
    return APP_EXIT_FAIL;
}
