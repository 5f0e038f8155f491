/* `loupe dump-qk` — placeholder until its issue lands. */
#include "app/app.h"

#include <stdio.h>

int cmd_dump_qk(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "loupe: dump-qk: not implemented yet\n");
    return APP_EXIT_FAIL;
}
