/* `loupe detokenize` — placeholder until its issue lands. */
#include "app/app.h"

#include <stdio.h>

int cmd_detokenize(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "loupe: detokenize: not implemented yet\n");
    return APP_EXIT_FAIL;
}
