/*
 * paging.c: a page directory that maps the first 4 MiB one-to-one.
 *
 * 32-bit paging without PAE (SDM Vol. 3A 4.3): CR3 holds the page
 * directory, each directory entry maps 4 MiB, either through a page table
 * of 1024 4-KiB entries or, with CR4.PSE and PS=1, as one 4-MiB page.
 * Guests that page start here and add entries of their own.
 */
#include "guest.h"

uint32_t page_dir[1024] __attribute__((aligned(PAGE_SIZE)));
uint32_t page_table_low[1024] __attribute__((aligned(PAGE_SIZE)));

void paging_identity_low(uint32_t flags)
{
	for (int i = 0; i < 1024; i++) {
		page_table_low[i] = (uint32_t)i * PAGE_SIZE | flags | PTE_P;
		page_dir[i] = 0;
	}
	page_dir[0] = (uint32_t)page_table_low | flags | PTE_P;
}

void paging_enable(void)
{
	write_cr3((uint32_t)page_dir);
	write_cr4(read_cr4() | CR4_PSE);
	write_cr0(read_cr0() | CR0_PG | CR0_WP);
}

void paging_disable(void)
{
	write_cr0(read_cr0() & ~(CR0_PG | CR0_WP));
}
