/*
 * vm.c: address spaces. 32-bit paging without PAE (SDM Vol. 3A 4.3): CR3
 * holds the physical address of a page directory of 1024 entries, each
 * mapping 4 MiB through a page table of 1024 entries of 4 KiB.
 *
 * The kernel is identity-mapped: below PHYS_LIMIT (1 GiB), virtual
 * address == physical address, for all of RAM. The kernel was linked
 * for and loaded at its physical address (1 MiB), so turning paging on
 * changes nothing under its feet, and any physical page kalloc returns
 * is usable as a pointer. (xv6 instead maps the kernel high, at
 * 0x80000000, which leaves user programs the low addresses but needs a
 * boot-time page table to jump up there; with user space starting at 1
 * GiB we need neither.) Those entries lack PTE_U, so ring 3 cannot touch
 * kernel memory: the CPU checks U/S on every access (4.6).
 *
 * Every process gets its own page directory: the kernel's entries,
 * copied, and its own page tables for [USER_BASE, USER_STACK_TOP). The
 * kernel's page tables are built once at boot and shared by all.
 *
 * Page 0 is left unmapped, so a null pointer faults in the kernel too.
 */
#include "kernel.h"

uint32_t *kernel_pgdir;

/*
 * The page table entry for `va`, allocating the page table if `create`.
 * The directory entry gets U/S from `flags`: the CPU combines the rights
 * of both levels (4.6), so user pages need PTE_U in both.
 */
static uint32_t *walk(uint32_t *pgdir, uint32_t va, int create, uint32_t flags)
{
	uint32_t *pde = &pgdir[PDX(va)];
	uint32_t *table;

	if (*pde & PTE_P) {
		table = (uint32_t *)PTE_ADDR(*pde);
	} else {
		if (!create || !(table = kalloc()))
			return NULL;
		*pde = (uint32_t)table | PTE_P | PTE_W | (flags & PTE_U);
	}
	return &table[PTX(va)];
}

static int map_page(uint32_t *pgdir, uint32_t va, uint32_t pa, uint32_t flags)
{
	uint32_t *pte = walk(pgdir, va, 1, flags);

	if (!pte)
		return -1;
	*pte = pa | flags | PTE_P;
	return 0;
}

/*
 * Builds the kernel's address space and turns paging on: RAM from page
 * 1 to phys_top, and the APIC registers (which live near 4 GiB, and must
 * not be cached: writes to them are commands).
 */
void vm_init(uint32_t phys_top)
{
	kernel_pgdir = kalloc();
	if (!kernel_pgdir)
		panic("vm_init: no memory for a page directory");
	for (uint32_t pa = PAGE_SIZE; pa < phys_top; pa += PAGE_SIZE)
		if (map_page(kernel_pgdir, pa, pa, PTE_W) < 0)
			panic("vm_init: no memory for page tables");
	if (lapic_phys)
		map_page(kernel_pgdir, lapic_phys, lapic_phys, PTE_W | PTE_PCD | PTE_PWT);
	if (ioapic_phys)
		map_page(kernel_pgdir, ioapic_phys, ioapic_phys, PTE_W | PTE_PCD | PTE_PWT);

	write_cr3((uint32_t)kernel_pgdir);
	/* CR0.WP: the kernel, too, faults on writing a read-only page, so a
	 * system call cannot be tricked into writing a program's code. */
	write_cr0(read_cr0() | CR0_PG | CR0_WP);
}

/* A new address space: the kernel's mappings and no user pages yet. */
uint32_t *uvm_create(void)
{
	uint32_t *pgdir = kalloc();

	if (pgdir)
		memcpy(pgdir, kernel_pgdir, PAGE_SIZE);
	return pgdir;
}

/* Maps the physical page `pa` at user address `va`. */
int uvm_map(uint32_t *pgdir, uint32_t va, uint32_t pa, uint32_t flags)
{
	return map_page(pgdir, va, pa, flags | PTE_U);
}

/* The page table entry for `va`, or 0 if there is none. */
uint32_t uvm_lookup(uint32_t *pgdir, uint32_t va)
{
	uint32_t *pte = walk(pgdir, va, 0, 0);

	return pte ? *pte : 0;
}

/*
 * Unmaps and frees the pages in [from, to). The TLB may still hold the
 * old translations, and the CPU would go on using them (SDM Vol. 3A
 * 4.10.4.2): INVLPG drops each one. (Entries that were not present need
 * no invalidation; the TLB never caches those, 4.10.2.3.)
 */
void uvm_unmap(uint32_t *pgdir, uint32_t from, uint32_t to)
{
	for (uint32_t va = PAGE_ROUND_UP(from); va < to; va += PAGE_SIZE) {
		uint32_t *pte = walk(pgdir, va, 0, 0);

		if (pte && (*pte & PTE_P)) {
			kfree((void *)PTE_ADDR(*pte));
			*pte = 0;
			invlpg(va);
		}
	}
}

/* Frees every user page, the page tables and the directory. The caller
 * must have switched CR3 away from it first. */
void uvm_free(uint32_t *pgdir)
{
	for (uint32_t pdx = PDX(USER_BASE); pdx < PDX(USER_STACK_TOP); pdx++) {
		uint32_t *table;

		if (!(pgdir[pdx] & PTE_P))
			continue;
		table = (uint32_t *)PTE_ADDR(pgdir[pdx]);
		for (int i = 0; i < 1024; i++)
			if (table[i] & PTE_P)
				kfree((void *)PTE_ADDR(table[i]));
		kfree(table);
	}
	kfree(pgdir);
}

/*
 * Demand-zero paging. The heap ([heap_start, brk)) and the stack
 * ([USER_STACK_BOTTOM, USER_STACK_TOP)) are promised to a process but
 * not mapped until it touches them: the #PF handler then maps a fresh
 * zeroed page and the faulting instruction runs again (a #PF is a fault:
 * the saved EIP points at the instruction, SDM Vol. 3A 6.5). Returns 0
 * when the page is now mapped, -1 for an address the process may not
 * use, -2 when memory is exhausted.
 */
int vm_fault(struct proc *p, uint32_t va)
{
	void *page;

	if (!(va >= p->heap_start && va < p->brk) &&
	    !(va >= USER_STACK_BOTTOM && va < USER_STACK_TOP))
		return -1;
	page = kalloc();
	if (!page)
		return -2;
	if (uvm_map(p->pgdir, PAGE_ROUND_DOWN(va), (uint32_t)page, PTE_W) < 0) {
		kfree(page);
		return -2;
	}
	return 0;
}

/*
 * May a system call read (or write) [va, va + n) for process p? The
 * kernel touches user memory directly, through the process's own page
 * tables, so it checks first, and maps demand-zero pages here rather
 * than take a #PF in ring 0.
 */
int user_range_ok(struct proc *p, uint32_t va, uint32_t n, int write)
{
	if (va < USER_BASE || va > USER_STACK_TOP || n > USER_STACK_TOP - va)
		return 0;
	for (uint32_t page = PAGE_ROUND_DOWN(va); page < va + n; page += PAGE_SIZE) {
		uint32_t pte = uvm_lookup(p->pgdir, page);

		if (!(pte & PTE_P)) {
			if (vm_fault(p, page) < 0)
				return 0;
			pte = uvm_lookup(p->pgdir, page);
		}
		if (write && !(pte & PTE_W))
			return 0;
	}
	return 1;
}
