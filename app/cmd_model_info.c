/* `loupe model-info` — placeholder until its issue lands. */
#include "app/app.h"

#include <stdio.h>

int cmd_model_info(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "loupe: model-info: not implemented yet\n");
    return APP_EXIT_FAIL;
}
