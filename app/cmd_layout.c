/* `loupe layout` — placeholder until its issue lands. */
#include "app/app.h"

#include <stdio.h>

int cmd_layout(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "loupe: layout: not implemented yet\n");
    return APP_EXIT_FAIL;
}
