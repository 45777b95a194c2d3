/* pagefaults: grows the heap with sbrk() and touches every new page.
 * sbrk maps nothing; each first touch is a #PF that the kernel answers
 * with a fresh zeroed page (kernel/vm.c, vm_fault). Shrinking the heap
 * again frees the pages, so every round faults on fresh ones. */
#include "user.h"

#define PAGES 1024
#define ROUNDS 4

int main(void)
{
	for (int round = 0; round < ROUNDS; round++) {
		char *heap = sbrk(PAGES * PAGE_SIZE);

		if (heap == (char *)-1) {
			printf("pagefaults: sbrk failed\n");
			return 1;
		}
		for (int i = 0; i < PAGES; i++) {
			volatile char *page = heap + i * PAGE_SIZE;

			if (page[i % PAGE_SIZE] != 0) { /* the fault is here */
				printf("pagefaults: a new page was not zero\n");
				return 1;
			}
			page[0] = 1;
		}
		sbrk(-PAGES * PAGE_SIZE);
	}
	printf("pagefaults: %d fresh heap pages touched, %d at a time\n",
	       PAGES * ROUNDS, PAGES);
	return 0;
}
