/* `loupe ask` — placeholder until its issue lands. */
#include "app/app.h"

#include <stdio.h>

int cmd_ask(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "loupe: ask: not implemented yet\n");
    return APP_EXIT_FAIL;
}
