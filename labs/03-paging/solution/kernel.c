/*
 * Lab 3, paging: identity-map the first 4 MiB with one 4 MiB page, turn
 * paging on, and map pages at DEMAND on demand: the first touch of each
 * faults (#PF), the handler gives it a frame, and the instruction runs
 * again (SDM Vol. 3A 4.3 and 4.7).
 */
#include "lab.h"

#define PTE_P 0x001u /* present */
#define PTE_W 0x002u /* writable */
#define PDE_PS 0x080u /* a 4 MiB page (with CR4.PSE) */
#define DEMAND 0x40000000u
#define FRAMES 16

static uint32_t page_directory[1024] __attribute__((aligned(4096)));
static uint32_t demand_table[1024] __attribute__((aligned(4096)));
static uint8_t frames[FRAMES][4096] __attribute__((aligned(4096)));
static uint32_t faults;

void page_fault(uint32_t cr2, uint32_t error)
{
	uint32_t page = cr2 & ~0xFFFu;

	/* Not present (error bit 0 clear) and inside the demand area. */
	if ((error & 1) || page < DEMAND || page >= DEMAND + FRAMES * 4096 || faults == FRAMES) {
		puts("unexpected page fault at ");
		put_hex(cr2);
		puts("\n");
		exit(99);
	}
	demand_table[(page >> 12) & 1023] = (uint32_t)frames[faults] | PTE_P | PTE_W;
	faults++;
}

void kmain(void)
{
	uint32_t sum = 0;

	page_directory[0] = 0 | PDE_PS | PTE_P | PTE_W;
	page_directory[DEMAND >> 22] = (uint32_t)demand_table | PTE_P | PTE_W;
	write_cr4(read_cr4() | CR4_PSE);
	write_cr3((uint32_t)page_directory);
	write_cr0(read_cr0() | CR0_PG);

	for (uint32_t i = 0; i < 8; i++) {
		volatile uint32_t *p = (volatile uint32_t *)(DEMAND + i * 4096);
		*p = i + 1;
		sum += *p;
	}
	puts("page faults: ");
	put_dec(faults);
	puts("\nsum: ");
	put_dec(sum);
	puts("\n");
	exit(0);
}
