/* Prints one line: where and when the caller was compiled. */
void greet(const char *file, const char *when);
