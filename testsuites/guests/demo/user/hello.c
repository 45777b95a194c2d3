/* hello: the smallest user program. One system call to print, and
 * crt0.S makes the second, exit, when main returns. */
#include "user.h"

int main(void)
{
	static const char message[] = "Hello from user space!\n";

	write(1, message, sizeof(message) - 1);
	return 0;
}
