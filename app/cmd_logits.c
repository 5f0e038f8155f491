/* `loupe logits` — placeholder until its issue lands. */
#include "app/app.h"

#include <stdio.h>

int cmd_logits(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "loupe: logits: not implemented yet\n");
    return APP_EXIT_FAIL;
}
