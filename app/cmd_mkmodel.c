/* `loupe mkmodel` — placeholder until its issue lands. */
#include "app/app.h"

#include <stdio.h>

int cmd_mkmodel(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "loupe: mkmodel: not implemented yet\n");
    return APP_EXIT_FAIL;
}
