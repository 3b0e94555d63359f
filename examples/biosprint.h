/*
 * biosprint.h - text output for the BIOS-calling examples (kjcore example).
 *
 * con_write() writes to the debug console (I/O port 0xE9) directly; screen_write() asks the
 * BIOS (INT 10h AH=03h for the cursor, AH=13h to write the string there and move the
 * cursor).  kjcore's BIOS copies what INT 10h writes to the debug console too.  The put_*
 * helpers format into a buffer and return the end.
 */
#ifndef BIOSPRINT_H
#define BIOSPRINT_H

void con_write(const char *s);
int screen_write(const char *s);
char *put_str(char *p, const char *s);
char *put_hex(char *p, unsigned long long value, int digits);
char *put_dec(char *p, unsigned int value);

#endif
