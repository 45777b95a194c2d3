/*
 * kalloc.c: the physical page allocator, as in xv6.
 *
 * Free 4-KiB pages form a linked list threaded through the pages
 * themselves: the first word of each free page points to the next. Page
 * tables, kernel stacks and user memory all come from here. The pages
 * are identity-mapped (vm.c), so a page's physical address is also a
 * pointer the kernel can use.
 */
#include "kernel.h"

struct free_page {
	struct free_page *next;
};

static struct free_page *free_list;
static uint32_t free_count;

/* Gives the allocator every page in [start, end). */
void kalloc_init(uint32_t start, uint32_t end)
{
	for (uint32_t pa = PAGE_ROUND_UP(start); pa + PAGE_SIZE <= end; pa += PAGE_SIZE)
		kfree((void *)pa);
}

void kfree(void *page)
{
	struct free_page *p = page;
	uint32_t flags;

	if ((uint32_t)page % PAGE_SIZE)
		panic("kfree: %p is not a page", page);
	flags = irq_save();
	p->next = free_list;
	free_list = p;
	free_count++;
	irq_restore(flags);
}

/* One zeroed page, or NULL when memory is exhausted. */
void *kalloc(void)
{
	uint32_t flags = irq_save();
	struct free_page *p = free_list;

	if (p) {
		free_list = p->next;
		free_count--;
	}
	irq_restore(flags);
	if (p) {
		/* REP STOSL: 1024 doubleword stores rather than 4096 bytes. */
		void *d = p;
		uint32_t n = PAGE_SIZE / 4;

		asm volatile("rep stosl" : "+D"(d), "+c"(n) : "a"(0) : "memory");
	}
	return p;
}

uint32_t kalloc_free_pages(void)
{
	return free_count;
}
