/*
 * elf.c: loads a user program, an ELF32 executable (System V ABI and its
 * Intel386 supplement), into an address space.
 *
 * The program headers of type PT_LOAD say what to map: p_filesz bytes
 * from file offset p_offset at virtual address p_vaddr, then zeros up
 * to p_memsz (that is .bss). Pages are allocated and filled now, and
 * mapped writable only if the segment is (p_flags & PF_WRITABLE), so a program
 * that writes to its own code is stopped by a #PF.
 */
#include "kernel.h"

#define ELF_MAGIC 0x464C457Fu /* "\x7fELF" */
#define ELFCLASS32 1
#define ET_EXEC 2
#define EM_386 3
#define PT_LOAD 1
#define PF_WRITABLE 2 /* p_flags: the segment is writable */

struct elf_header {
	uint32_t magic;
	uint8_t class, data, ident_version, ident_pad[9];
	uint16_t type, machine;
	uint32_t version, entry, phoff, shoff, flags;
	uint16_t ehsize, phentsize, phnum, shentsize, shnum, shstrndx;
};

struct elf_program_header {
	uint32_t type, offset, vaddr, paddr, filesz, memsz, flags, align;
};

/* Maps and fills one PT_LOAD segment. */
static int load_segment(uint32_t *pgdir, const uint8_t *image,
			const struct elf_program_header *ph)
{
	uint32_t flags = (ph->flags & PF_WRITABLE) ? PTE_W : 0;
	uint32_t file_end = ph->vaddr + ph->filesz;

	for (uint32_t va = PAGE_ROUND_DOWN(ph->vaddr); va < ph->vaddr + ph->memsz;
	     va += PAGE_SIZE) {
		uint32_t pte = uvm_lookup(pgdir, va);
		uint8_t *page;
		uint32_t from, to;

		/* Two segments may share a page at their boundary. */
		if (pte & PTE_P) {
			page = (uint8_t *)PTE_ADDR(pte);
			flags |= pte & PTE_W;
		} else if (!(page = kalloc())) {
			return -1;
		}
		if (uvm_map(pgdir, va, (uint32_t)page, flags) < 0)
			return -1;
		from = va > ph->vaddr ? va : ph->vaddr;
		to = va + PAGE_SIZE < file_end ? va + PAGE_SIZE : file_end;
		if (from < to)
			memcpy(page + (from - va), image + ph->offset + (from - ph->vaddr),
			       to - from);
	}
	return 0;
}

/*
 * Returns 0 and the entry point and the end of the highest segment, or
 * -1 if the image is not an i386 executable for user space. On failure
 * pages may already be mapped; the caller frees the whole address space.
 */
int elf_load(uint32_t *pgdir, const uint8_t *image, uint32_t size,
	     uint32_t *entry, uint32_t *end)
{
	const struct elf_header *eh = (const void *)image;

	if (size < sizeof(*eh) || eh->magic != ELF_MAGIC || eh->class != ELFCLASS32 ||
	    eh->type != ET_EXEC || eh->machine != EM_386 ||
	    eh->phentsize != sizeof(struct elf_program_header) ||
	    eh->phoff > size || eh->phnum * sizeof(struct elf_program_header) > size - eh->phoff)
		return -1;
	*entry = eh->entry;
	*end = USER_BASE;
	for (int i = 0; i < eh->phnum; i++) {
		const struct elf_program_header *ph =
			(const void *)(image + eh->phoff + i * sizeof(*ph));

		if (ph->type != PT_LOAD)
			continue;
		if (ph->filesz > ph->memsz || ph->vaddr < USER_BASE ||
		    ph->vaddr > USER_HEAP_LIMIT ||
		    ph->memsz > USER_HEAP_LIMIT - ph->vaddr || ph->offset > size ||
		    ph->filesz > size - ph->offset)
			return -1;
		if (load_segment(pgdir, image, ph) < 0)
			return -1;
		if (ph->vaddr + ph->memsz > *end)
			*end = ph->vaddr + ph->memsz;
	}
	return 0;
}
