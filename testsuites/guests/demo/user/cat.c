/* cat: copies console lines to the console until an empty line. read()
 * returns one edited line at a time, its '\n' included (kernel/console.c). */
#include "user.h"

int main(void)
{
	static const char hint[] = "cat: type lines; an empty line ends cat\n";
	char line[128];
	int n;

	write(1, hint, sizeof(hint) - 1);
	while ((n = read(0, line, sizeof(line))) > 0 && line[0] != '\n')
		write(1, line, n);
	return 0;
}
