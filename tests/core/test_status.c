/* Status table and error context: every status has a message, loupe_fail formats and truncates
 * safely, prefixes compose. */
#include <string.h>

#include "anns/anns.h"
#include "common/test_util.h"

int main(void)
{
    for (int s = 0; s <= LOUPE_ERR_INTERNAL; s++)
        CHECK(strcmp(loupe_status_str((loupe_status)s), "unknown status") != 0);
    CHECK(strcmp(loupe_status_str((loupe_status)999), "unknown status") == 0);

    loupe_err err;
    loupe_err_clear(&err);
    CHECK(err.status == LOUPE_OK);
    CHECK(strcmp(loupe_err_message(&err), "success") == 0);
    CHECK(loupe_fail(&err, LOUPE_ERR_FORMAT, "%s: bad magic %#x", "m.gguf", 0x1234) ==
          LOUPE_ERR_FORMAT);
    CHECK(strcmp(err.msg, "m.gguf: bad magic 0x1234") == 0);
    loupe_err_prefix(&err, "loading %s: ", "model");
    CHECK(strcmp(err.msg, "loading model: m.gguf: bad magic 0x1234") == 0);

    char big[2000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    loupe_fail(&err, LOUPE_ERR_IO, "%s", big);
    CHECK(strlen(err.msg) == LOUPE_ERR_MSG_MAX - 1);
    CHECK(loupe_fail(NULL, LOUPE_ERR_IO, "ignored") == LOUPE_ERR_IO);
    return test_summary("test_status");
}
