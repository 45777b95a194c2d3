/* syscalls: 100000 getpid() calls, the cheapest system call there is,
 * so the time goes into the round trip itself: INT 0x80, the stack
 * switch to TSS.ESP0, the trap frame, the dispatch, and IRET back to
 * ring 3. */
#include "user.h"

#define CALLS 100000

int main(void)
{
	int pid = getpid();

	for (int i = 0; i < CALLS; i++) {
		if (getpid() != pid) {
			printf("syscalls: getpid() changed its answer\n");
			return 1;
		}
	}
	printf("syscalls: %d getpid() calls, each returned %d\n", CALLS, pid);
	return 0;
}
