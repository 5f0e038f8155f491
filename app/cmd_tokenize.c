/* `loupe tokenize` — placeholder until its issue lands. */
#include "app/app.h"

#include <stdio.h>

int cmd_tokenize(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "loupe: tokenize: not implemented yet\n");
    return APP_EXIT_FAIL;
}
