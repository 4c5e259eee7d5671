/* A line of an HTTP head, as the server's front door and the downloader
 * read them. */
#ifndef PLUMB_BASE_HTTP_H
#define PLUMB_BASE_HTTP_H

#include <stddef.h>

/* The value of header line (len bytes: "Name: value", with or without its
 * line end) when its field is name (any case), trimmed of spaces, tabs and
 * the line end, its length in *vlen; NULL when the line holds another
 * field. */
const char *http_field_value(const char *line, size_t len, const char *name, size_t *vlen);

#endif
