/* sleeper: sleeps three times for 10 ticks (0.1 s), then yields. While
 * it sleeps nothing is runnable, and the CPU halts until the timer. */
#include "user.h"

int main(void)
{
	for (int i = 1; i <= 3; i++) {
		sleep(10);
		printf("sleeper: woke up %d\n", i);
	}
	yield();
	return 0;
}
