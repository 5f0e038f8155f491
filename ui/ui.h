/*
 * ui — the ncurses (wide-character) TUI: chat view with streaming output, input line with history,
 * status bar, progress screens, session list, slash commands. The only module that includes
 * ncurses. (Its issue comes later.)
 */
#ifndef LOUPE_UI_H
#define LOUPE_UI_H

#include "sessions/sessions.h"

#endif /* LOUPE_UI_H */
