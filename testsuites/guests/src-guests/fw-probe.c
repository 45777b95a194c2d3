/*
 * fw-probe: what firmware and CPU identity a PC presents, as an OS finds
 * it, printed one finding per line as `probe: KEY = VALUE` so that the
 * same image run on ringside and on `qemu-system-i386 -cpu coreduo` can
 * be compared key by key (testsuites/cli/fw_probe.rs does).
 *
 * It probes, in order:
 *   - QEMU's fw_cfg interface through its legacy I/O ports (QEMU
 *     docs/specs/fw_cfg.txt): the signature, the ID, the CPU count, the
 *     RAM size, the command line and the file directory;
 *   - the ACPI tables (ACPI 6.x chapter 5): the RSDP found by the scan of
 *     5.2.5.1, the RSDT, the FADT and its PM timer, the DSDT, the MADT
 *     and the HPET table;
 *   - the HPET itself (IA-PC HPET specification 1.0a, 2.3);
 *   - CPUID (SDM Vol. 2A CPUID), and the MSRs of a Core Duo (SDM Vol. 4
 *     table 2-3): IA32_MISC_ENABLE, the MTRRs, IA32_PAT, the performance
 *     counters (SDM Vol. 3B 20.2.1), and IA32_EFER, which must exist
 *     exactly when CPUID advertises NX or long mode.
 *
 * Every MSR access runs under TRY, so a #GP is printed as the value `#GP`
 * instead of stopping the probe. The guest stays in unpaged protected
 * mode, so it runs on every engine, and exits 0 whatever it finds: the
 * judging is the comparison's job.
 */
#include "guest.h"

static const char *yes_no(int b)
{
	return b ? "yes" : "no";
}

static inline void outw(uint16_t port, uint16_t v)
{
	asm volatile("outw %0, %1" : : "a"(v), "Nd"(port));
}
static inline uint32_t inl(uint16_t port)
{
	uint32_t v;
	asm volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

/* A loop of exactly 2 * n instructions (DEC, JNZ), n > 0. */
static void spin(uint32_t n)
{
	asm volatile("1: dec %0; jnz 1b" : "+r"(n));
}

static uint32_t le32(const uint8_t *p)
{
	return p[0] | (p[1] << 8) | (p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint32_t be32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3];
}
static uint64_t le64(const uint8_t *p)
{
	return le32(p) | ((uint64_t)le32(p + 4) << 32);
}

/* ---- MSRs, with #GP caught ---- */

/* Reads an MSR; returns 0 and leaves *v alone if RDMSR raised #GP. */
static int msr_read(uint32_t msr, uint64_t *v)
{
	static volatile uint64_t value;
	const struct trap_record *t = TRY(value = rdmsr(msr));

	if (t->vector != NO_TRAP)
		return 0;
	*v = value;
	return 1;
}

static int msr_write(uint32_t msr, uint64_t v)
{
	return TRY(wrmsr(msr, v))->vector == NO_TRAP;
}

/* Prints `probe: KEY = 0x...`, or `#GP`. */
static int print_msr(const char *key, uint32_t msr, uint64_t *v)
{
	uint64_t value = 0;
	int ok = msr_read(msr, &value);

	if (ok)
		kprintf("probe: %s = %#llx\n", key, value);
	else
		kprintf("probe: %s = #GP\n", key);
	if (v)
		*v = value;
	return ok;
}

/* ---- fw_cfg (QEMU docs/specs/fw_cfg.txt) ---- */

#define FW_CFG_PORT_SEL 0x510  /* 16-bit selector */
#define FW_CFG_PORT_DATA 0x511 /* 8-bit data, the item's bytes in order */
#define FW_CFG_SIGNATURE 0x0000
#define FW_CFG_ID 0x0001
#define FW_CFG_RAM_SIZE 0x0003
#define FW_CFG_NB_CPUS 0x0005
#define FW_CFG_MAX_CPUS 0x000f
#define FW_CFG_CMDLINE_SIZE 0x0014
#define FW_CFG_CMDLINE_DATA 0x0015
#define FW_CFG_FILE_DIR 0x0019
#define FW_CFG_ID_TRADITIONAL 0x1 /* the I/O port interface */
#define FW_CFG_ID_DMA 0x2

/* One file directory entry: size and select big-endian. */
struct fw_cfg_file {
	uint8_t size[4];
	uint8_t select[2];
	uint8_t reserved[2];
	char name[56];
} __attribute__((packed));

/* Selecting an item rewinds its data offset to 0. */
static void fw_cfg_read(uint16_t key, void *buf, uint32_t len)
{
	uint8_t *p = buf;

	outw(FW_CFG_PORT_SEL, key);
	while (len--)
		*p++ = inb(FW_CFG_PORT_DATA);
}

/* Continues reading the selected item. */
static void fw_cfg_read_more(void *buf, uint32_t len)
{
	uint8_t *p = buf;

	while (len--)
		*p++ = inb(FW_CFG_PORT_DATA);
}

static int name_is(const char *a, const char *b)
{
	while (*a && *a == *b) {
		a++;
		b++;
	}
	return *a == *b;
}

static void probe_fw_cfg_e820(uint16_t select, uint32_t size)
{
	uint8_t entry[20];
	uint32_t i;

	kprintf("probe: fw_cfg.e820_entries = %u\n", size / 20);
	outw(FW_CFG_PORT_SEL, select);
	for (i = 0; i < size / 20 && i < 16; i++) {
		fw_cfg_read_more(entry, sizeof(entry));
		kprintf("probe: fw_cfg.e820.%u = addr %#llx len %#llx type %u\n", i,
			le64(entry), le64(entry + 8), le32(entry + 16));
	}
}

static void probe_fw_cfg_files(void)
{
	static struct fw_cfg_file files[64];
	uint8_t count_be[4];
	uint32_t count, i;
	int e820 = -1;

	fw_cfg_read(FW_CFG_FILE_DIR, count_be, 4);
	count = be32(count_be);
	kprintf("probe: fw_cfg.file_count = %u\n", count);
	if (count > ARRAY_SIZE(files))
		count = ARRAY_SIZE(files);
	fw_cfg_read_more(files, count * sizeof(files[0]));
	kprintf("probe: fw_cfg.files =");
	for (i = 0; i < count; i++) {
		files[i].name[55] = 0;
		kprintf(" %s", files[i].name);
		if (name_is(files[i].name, "etc/e820"))
			e820 = i;
	}
	kprintf("\n");
	kprintf("probe: fw_cfg.e820_listed = %s\n", yes_no(e820 >= 0));
	if (e820 >= 0)
		probe_fw_cfg_e820(files[e820].select[0] << 8 | files[e820].select[1],
				  be32(files[e820].size));
}

static void probe_fw_cfg(void)
{
	uint8_t sig[5] = { 0 }, b[8];
	static char cmdline[256];
	uint32_t id, len;

	fw_cfg_read(FW_CFG_SIGNATURE, sig, 4);
	kprintf("probe: fw_cfg.present = %s\n", yes_no(memcmp(sig, "QEMU", 4) == 0));
	if (memcmp(sig, "QEMU", 4) != 0)
		return;
	fw_cfg_read(FW_CFG_ID, b, 4);
	id = le32(b);
	kprintf("probe: fw_cfg.id = %#x\n", id);
	kprintf("probe: fw_cfg.id.traditional = %s\n", yes_no(id & FW_CFG_ID_TRADITIONAL));
	kprintf("probe: fw_cfg.id.dma = %s\n", yes_no(id & FW_CFG_ID_DMA));
	fw_cfg_read(FW_CFG_NB_CPUS, b, 2);
	kprintf("probe: fw_cfg.nb_cpus = %u\n", b[0] | b[1] << 8);
	fw_cfg_read(FW_CFG_MAX_CPUS, b, 2);
	kprintf("probe: fw_cfg.max_cpus = %u\n", b[0] | b[1] << 8);
	fw_cfg_read(FW_CFG_RAM_SIZE, b, 8);
	kprintf("probe: fw_cfg.ram_size = %#llx\n", le64(b));
	fw_cfg_read(FW_CFG_CMDLINE_SIZE, b, 4);
	len = le32(b);
	kprintf("probe: fw_cfg.cmdline_size = %u\n", len);
	if (len >= sizeof(cmdline))
		len = sizeof(cmdline) - 1;
	fw_cfg_read(FW_CFG_CMDLINE_DATA, cmdline, len);
	cmdline[len] = 0;
	kprintf("probe: fw_cfg.cmdline = %s\n", cmdline);
	probe_fw_cfg_files();
}

/* ---- ACPI (ACPI 6.4 chapter 5) ---- */

struct acpi_header {
	char signature[4];
	uint32_t length;
	uint8_t revision, checksum;
	char oem_id[6], oem_table_id[8];
	uint32_t oem_revision, creator_id, creator_revision;
} __attribute__((packed));

/* Every table's bytes, its checksum included, sum to 0 (5.2.6). */
static int sums_to_zero(const void *p, uint32_t len)
{
	const uint8_t *b = p;
	uint8_t sum = 0;

	while (len--)
		sum += *b++;
	return sum == 0;
}

static int all_checksums_valid = 1;

static void print_checksum(const char *what, const void *p, uint32_t len)
{
	int ok = sums_to_zero(p, len);

	all_checksums_valid &= ok;
	kprintf("probe: acpi.checksum.%s = %s\n", what, yes_no(ok));
}

static void print_signature(const char *key, const char *sig)
{
	kprintf("probe: %s = %c%c%c%c\n", key, sig[0], sig[1], sig[2], sig[3]);
}

/* The RSDP lies on a 16-byte boundary in the EBDA's first KiB or in
 * 0xE0000-0xFFFFF, and its first 20 bytes sum to 0 (5.2.5.1). */
static const uint8_t *find_rsdp_in(uint32_t start, uint32_t end)
{
	uint32_t a;

	for (a = start; a < end; a += 16) {
		const uint8_t *p = (const uint8_t *)a;

		if (memcmp(p, "RSD PTR ", 8) == 0 && sums_to_zero(p, 20))
			return p;
	}
	return NULL;
}

/* The BIOS data area word at 0x40E holds the EBDA's segment. The asm
 * hides the constant address from GCC, which would otherwise call the
 * access out of bounds of a zero-length object. */
static uint16_t bda_ebda_segment(void)
{
	const volatile uint16_t *p;

	asm("" : "=r"(p) : "0"(0x40E));
	return *p;
}

static const uint8_t *find_rsdp(void)
{
	uint32_t ebda = (uint32_t)bda_ebda_segment() << 4;
	const uint8_t *p = NULL;

	if (ebda)
		p = find_rsdp_in(ebda, ebda + 1024);
	if (p) {
		kprintf("probe: acpi.rsdp_where = EBDA\n");
		return p;
	}
	p = find_rsdp_in(0xE0000, 0x100000);
	if (p)
		kprintf("probe: acpi.rsdp_where = BIOS area 0xe0000-0xfffff\n");
	return p;
}

/* FADT fields (5.2.9, table 5.9), ACPI 1.0 offsets. */
#define FADT_DSDT 40
#define FADT_SCI_INT 46
#define FADT_PM_TMR_BLK 76
#define FADT_PM_TMR_LEN 91
#define FADT_FLAGS 112
#define FADT_TMR_VAL_EXT (1u << 8) /* 32-bit PM timer, else 24-bit */

static void probe_fadt(const struct acpi_header *h)
{
	const uint8_t *t = (const uint8_t *)h;
	uint32_t port = le32(t + FADT_PM_TMR_BLK);
	uint32_t flags = h->length >= FADT_FLAGS + 4 ? le32(t + FADT_FLAGS) : 0;
	const struct acpi_header *dsdt = (const void *)le32(t + FADT_DSDT);
	uint32_t mask = flags & FADT_TMR_VAL_EXT ? 0xFFFFFFFF : 0xFFFFFF;
	uint32_t first, second;

	kprintf("probe: acpi.fadt.revision = %u\n", h->revision);
	kprintf("probe: acpi.fadt.sci_int = %u\n", t[FADT_SCI_INT] | t[FADT_SCI_INT + 1] << 8);
	kprintf("probe: acpi.fadt.pm_tmr_blk = %#x\n", port);
	kprintf("probe: acpi.fadt.pm_tmr_len = %u\n", t[FADT_PM_TMR_LEN]);
	kprintf("probe: acpi.fadt.pm_timer_bits = %u\n", flags & FADT_TMR_VAL_EXT ? 32 : 24);
	if (port && port < 0x10000) {
		/* 3.579545 MHz: a million-iteration loop spans many ticks. */
		first = inl(port) & mask;
		spin(1000000);
		second = inl(port) & mask;
		kprintf("probe: acpi.pm_timer.first = %#x\n", first);
		kprintf("probe: acpi.pm_timer.advances = %s\n",
			yes_no(first != second && second != mask));
	}
	kprintf("probe: acpi.dsdt.present = %s\n",
		yes_no(dsdt && memcmp(dsdt->signature, "DSDT", 4) == 0));
	if (dsdt && memcmp(dsdt->signature, "DSDT", 4) == 0) {
		kprintf("probe: acpi.dsdt.length = %u\n", dsdt->length);
		print_checksum("DSDT", dsdt, dsdt->length);
	}
}

/* MADT (5.2.12): the local APIC address and flags, then entries of
 * type, length, body. */
#define MADT_PCAT_COMPAT 1
#define MADT_LOCAL_APIC 0
#define MADT_IO_APIC 1
#define MADT_INTERRUPT_OVERRIDE 2

static void probe_madt(const struct acpi_header *h)
{
	const uint8_t *t = (const uint8_t *)h, *e;
	uint32_t processors = 0, ioapics = 0;
	int irq0_to_gsi2 = 0;

	kprintf("probe: acpi.madt.lapic_address = %#x\n", le32(t + 36));
	kprintf("probe: acpi.madt.pcat_compat = %s\n", yes_no(le32(t + 40) & MADT_PCAT_COMPAT));
	kprintf("probe: acpi.madt.overrides =");
	for (e = t + 44; e + 2 <= t + h->length && e[1] >= 2; e += e[1]) {
		if (e[0] == MADT_INTERRUPT_OVERRIDE) {
			/* bus, source IRQ, GSI, flags */
			kprintf(" %u->%u/%#x", e[3], le32(e + 4), e[8] | e[9] << 8);
			if (e[3] == 0 && le32(e + 4) == 2)
				irq0_to_gsi2 = 1;
		}
	}
	kprintf("\n");
	for (e = t + 44; e + 2 <= t + h->length && e[1] >= 2; e += e[1]) {
		switch (e[0]) {
		case MADT_LOCAL_APIC:
			/* processor UID, APIC ID, flags (bit 0 enabled) */
			processors++;
			kprintf("probe: acpi.madt.cpu%u = apic_id %u flags %#x\n", e[2], e[3],
				le32(e + 4));
			break;
		case MADT_IO_APIC:
			/* id, reserved, address, GSI base */
			if (ioapics++ == 0) {
				kprintf("probe: acpi.madt.ioapic_id = %u\n", e[2]);
				kprintf("probe: acpi.madt.ioapic_address = %#x\n", le32(e + 4));
				kprintf("probe: acpi.madt.ioapic_gsi_base = %u\n", le32(e + 8));
			}
			break;
		}
	}
	kprintf("probe: acpi.madt.processors = %u\n", processors);
	kprintf("probe: acpi.madt.ioapics = %u\n", ioapics);
	kprintf("probe: acpi.madt.iso_irq0_to_gsi2 = %s\n", yes_no(irq0_to_gsi2));
}

/* HPET registers (IA-PC HPET 1.0a, 2.3.1). */
#define HPET_CAP 0x000
#define HPET_CONFIG 0x010
#define HPET_COUNTER 0x0F0
#define HPET_ENABLE_CNF 0x1

static uint64_t hpet_read(uint32_t base, uint32_t reg)
{
	volatile uint32_t *r = (volatile uint32_t *)(base + reg);

	return r[0] | (uint64_t)r[1] << 32;
}

static void probe_hpet(const struct acpi_header *h)
{
	const uint8_t *t = (const uint8_t *)h;
	/* Event timer block ID at 36, then the base address as a GAS
	 * (5.2.3.2): space ID 0 = memory, address at its offset 4. */
	uint64_t base64 = le64(t + 44);
	uint32_t base = (uint32_t)base64;
	volatile uint32_t *config = (volatile uint32_t *)(base + HPET_CONFIG);
	uint64_t cap, first, second;
	uint32_t saved;

	kprintf("probe: acpi.hpet.block_id = %#x\n", le32(t + 36));
	kprintf("probe: acpi.hpet.address_space = %u\n", t[40]);
	kprintf("probe: hpet.base = %#llx\n", base64);
	if (t[40] != 0 || base64 >> 32 || base == 0)
		return;
	cap = hpet_read(base, HPET_CAP);
	kprintf("probe: hpet.cap = %#llx\n", cap);
	kprintf("probe: hpet.vendor = %#x\n", (uint32_t)(cap >> 16) & 0xFFFF);
	kprintf("probe: hpet.revision = %u\n", (uint32_t)cap & 0xFF);
	kprintf("probe: hpet.timers = %u\n", ((uint32_t)(cap >> 8) & 0x1F) + 1);
	kprintf("probe: hpet.counter_64bit = %s\n", yes_no(cap & (1 << 13)));
	kprintf("probe: hpet.legacy_replacement = %s\n", yes_no(cap & (1 << 15)));
	kprintf("probe: hpet.period_fs = %u\n", (uint32_t)(cap >> 32));
	saved = *config;
	*config = saved | HPET_ENABLE_CNF;
	first = hpet_read(base, HPET_COUNTER);
	spin(100000);
	second = hpet_read(base, HPET_COUNTER);
	*config = saved;
	kprintf("probe: hpet.counter_advances = %s\n", yes_no(second != first));
}

static void probe_acpi(void)
{
	const uint8_t *rsdp = find_rsdp();
	const struct acpi_header *rsdt, *fadt = NULL, *madt = NULL, *hpet = NULL;
	uint32_t i, n;

	kprintf("probe: acpi.rsdp_found = %s\n", yes_no(rsdp != NULL));
	if (!rsdp)
		return;
	kprintf("probe: acpi.rsdp_address = %p\n", rsdp);
	kprintf("probe: acpi.rsdp.oem_id = %c%c%c%c%c%c\n", rsdp[9], rsdp[10], rsdp[11],
		rsdp[12], rsdp[13], rsdp[14]);
	kprintf("probe: acpi.rsdp.revision = %u\n", rsdp[15]);
	print_checksum("RSDP", rsdp, 20);
	rsdt = (const void *)le32(rsdp + 16);
	kprintf("probe: acpi.rsdt_address = %p\n", rsdt);
	print_signature("acpi.rsdt.signature", rsdt->signature);
	print_checksum("RSDT", rsdt, rsdt->length);
	n = (rsdt->length - sizeof(*rsdt)) / 4;
	kprintf("probe: acpi.rsdt.tables =");
	for (i = 0; i < n; i++) {
		const struct acpi_header *h = (const void *)le32((const uint8_t *)(rsdt + 1) + 4 * i);

		kprintf(" %c%c%c%c", h->signature[0], h->signature[1], h->signature[2],
			h->signature[3]);
		if (memcmp(h->signature, "FACP", 4) == 0)
			fadt = h;
		else if (memcmp(h->signature, "APIC", 4) == 0)
			madt = h;
		else if (memcmp(h->signature, "HPET", 4) == 0)
			hpet = h;
	}
	kprintf("\n");
	kprintf("probe: acpi.rsdt.has_FACP = %s\n", yes_no(fadt != NULL));
	kprintf("probe: acpi.rsdt.has_APIC = %s\n", yes_no(madt != NULL));
	kprintf("probe: acpi.rsdt.has_HPET = %s\n", yes_no(hpet != NULL));
	for (i = 0; i < n; i++) {
		const struct acpi_header *h = (const void *)le32((const uint8_t *)(rsdt + 1) + 4 * i);
		char what[5] = { h->signature[0], h->signature[1], h->signature[2],
				 h->signature[3], 0 };

		print_checksum(what, h, h->length);
	}
	if (fadt)
		probe_fadt(fadt);
	if (madt)
		probe_madt(madt);
	if (hpet)
		probe_hpet(hpet);
	kprintf("probe: acpi.checksums_valid = %s\n", yes_no(all_checksums_valid));
}

/* ---- CPUID (SDM Vol. 2A) ---- */

static uint32_t max_extended_leaf;

static void probe_cpuid(void)
{
	uint32_t a, b, c, d, family, model;
	uint32_t vendor[4] = { 0 };
	uint32_t brand[13] = { 0 };

	cpuid(0, &a, &vendor[0], &vendor[2], &vendor[1]);
	kprintf("probe: cpuid.vendor = %s\n", (const char *)vendor);
	kprintf("probe: cpuid.max_basic_leaf = %#x\n", a);
	if (a >= 0xA) {
		uint32_t eax, unused;

		cpuid(0xA, &eax, &unused, &unused, &unused);
		kprintf("probe: cpuid.pmu_version = %u\n", eax & 0xFF);
		kprintf("probe: cpuid.pmu_gp_counters = %u\n", (eax >> 8) & 0xFF);
		kprintf("probe: cpuid.pmu_counter_width = %u\n", (eax >> 16) & 0xFF);
	}
	cpuid(1, &a, &b, &c, &d);
	/* The display family and model fold in the extended fields for
	 * family 6 and 15 (SDM Vol. 2A, CPUID EAX = 01H). */
	family = (a >> 8) & 0xF;
	model = (a >> 4) & 0xF;
	if (family == 0xF)
		family += (a >> 20) & 0xFF;
	if (family == 0x6 || family == 0xF)
		model += ((a >> 16) & 0xF) << 4;
	kprintf("probe: cpuid.signature = %#x\n", a);
	kprintf("probe: cpuid.family = %u\n", family);
	kprintf("probe: cpuid.model = %u\n", model);
	kprintf("probe: cpuid.stepping = %u\n", a & 0xF);
	kprintf("probe: cpuid.1.edx = %#x\n", d);
	kprintf("probe: cpuid.1.ecx = %#x\n", c);
	kprintf("probe: cpuid.hypervisor_bit = %s\n", yes_no(c & (1u << 31)));
	cpuid(0x80000000, &max_extended_leaf, &b, &c, &d);
	kprintf("probe: cpuid.max_extended_leaf = %#x\n", max_extended_leaf);
	if (max_extended_leaf >= 0x80000001) {
		cpuid(0x80000001, &a, &b, &c, &d);
		kprintf("probe: cpuid.80000001.edx = %#x\n", d);
		kprintf("probe: cpuid.80000001.ecx = %#x\n", c);
	}
	if (max_extended_leaf >= 0x80000004) {
		cpuid(0x80000002, &brand[0], &brand[1], &brand[2], &brand[3]);
		cpuid(0x80000003, &brand[4], &brand[5], &brand[6], &brand[7]);
		cpuid(0x80000004, &brand[8], &brand[9], &brand[10], &brand[11]);
		kprintf("probe: cpuid.brand = %s\n", (const char *)brand);
	}
	if (max_extended_leaf >= 0x80000008) {
		cpuid(0x80000008, &a, &b, &c, &d);
		kprintf("probe: cpuid.address_bits = phys %u linear %u\n", a & 0xFF,
			(a >> 8) & 0xFF);
	}
}

/* ---- MSRs (SDM Vol. 4 table 2-3, Core Duo) ---- */

#define IA32_PMC0 0x0C1
#define IA32_MTRRCAP 0x0FE
#define IA32_PERFEVTSEL0 0x186
#define IA32_MISC_ENABLE 0x1A0
#define IA32_MTRR_PHYSBASE0 0x200
#define IA32_MTRR_PHYSMASK0 0x201
#define IA32_PAT 0x277
#define IA32_MTRR_DEF_TYPE 0x2FF
#define IA32_EFER 0xC0000080
#define AMD_K7_PERFEVTSEL0 0xC0010000
#define CPUID_80000001_NX (1u << 20)
#define CPUID_80000001_LM (1u << 29)

/* Writes `test`, reads it back, restores what was there. */
static void print_write_read_back(const char *key, uint32_t msr, uint64_t test)
{
	uint64_t saved = 0, seen = 0;

	if (!msr_read(msr, &saved)) {
		kprintf("probe: %s = #GP\n", key);
		return;
	}
	if (!msr_write(msr, test)) {
		kprintf("probe: %s = write #GP\n", key);
		return;
	}
	msr_read(msr, &seen);
	msr_write(msr, saved);
	kprintf("probe: %s = %s\n", key, seen == test ? "same" : "different");
	if (seen != test)
		kprintf("probe: %s.read = %#llx\n", key, seen);
}

/* Counts instructions retired (event 0xC0, umask 0) at every CPL over a
 * loop of 2 * 100000 instructions (SDM Vol. 3B 20.2.1.1). */
#define LOOP_ITERATIONS 100000
#define EVTSEL_INST_RETIRED 0xC0
#define EVTSEL_USR (1u << 16)
#define EVTSEL_OS (1u << 17)
#define EVTSEL_EN (1u << 22)

static void probe_pmc(void)
{
	uint64_t before = 0, after = 0;

	if (!msr_write(IA32_PERFEVTSEL0, 0) || !msr_write(IA32_PMC0, 0)) {
		kprintf("probe: msr.pmc0_advances = #GP\n");
		return;
	}
	msr_read(IA32_PMC0, &before);
	if (!msr_write(IA32_PERFEVTSEL0,
		       EVTSEL_INST_RETIRED | EVTSEL_USR | EVTSEL_OS | EVTSEL_EN)) {
		kprintf("probe: msr.pmc0_advances = #GP\n");
		return;
	}
	spin(LOOP_ITERATIONS);
	msr_write(IA32_PERFEVTSEL0, 0);
	msr_read(IA32_PMC0, &after);
	kprintf("probe: msr.pmc0_count = %llu\n", after - before);
	kprintf("probe: msr.pmc0_advances = %s\n", yes_no(after != before));
	kprintf("probe: msr.pmc0_counts_the_loop = %s\n",
		yes_no(after - before >= 2 * LOOP_ITERATIONS));
}

static void probe_msrs(void)
{
	uint64_t misc = 0, efer = 0;
	uint32_t a, b, c, d = 0;
	int readable, advertised;

	readable = print_msr("msr.misc_enable", IA32_MISC_ENABLE, &misc);
	kprintf("probe: msr.misc_enable.readable = %s\n", yes_no(readable));
	if (readable)
		kprintf("probe: msr.misc_enable.fast_strings = %s\n", yes_no(misc & 1));
	print_msr("msr.mtrrcap", IA32_MTRRCAP, NULL);
	print_msr("msr.mtrr_def_type", IA32_MTRR_DEF_TYPE, NULL);
	print_msr("msr.mtrr_physbase0", IA32_MTRR_PHYSBASE0, NULL);
	print_msr("msr.mtrr_physmask0", IA32_MTRR_PHYSMASK0, NULL);
	print_msr("msr.pat", IA32_PAT, NULL);
	/* Write-back at 10 MiB, and a 1-MiB mask with V clear: a valid
	 * pair that changes no memory type. */
	print_write_read_back("msr.mtrr_physbase0.write_read_back", IA32_MTRR_PHYSBASE0,
			      0x00A00006);
	print_write_read_back("msr.mtrr_physmask0.write_read_back", IA32_MTRR_PHYSMASK0,
			      0xFFF00000);
	/* PA0-PA7 = WB WC UC- UC, twice: every type is a valid encoding. */
	print_write_read_back("msr.pat.write_read_back", IA32_PAT, 0x0007010600070106ull);
	probe_pmc();
	if (max_extended_leaf >= 0x80000001)
		cpuid(0x80000001, &a, &b, &c, &d);
	advertised = (d & (CPUID_80000001_NX | CPUID_80000001_LM)) != 0;
	readable = print_msr("msr.efer", IA32_EFER, &efer);
	kprintf("probe: msr.efer.advertised = %s\n", yes_no(advertised));
	kprintf("probe: msr.efer_matches_cpuid = %s\n", yes_no(readable == advertised));
	print_msr("msr.amd_k7_perfevtsel0", AMD_K7_PERFEVTSEL0, NULL);
}

/* The command line the loader put in the Multiboot information (flags
 * bit 2, the string's address at offset 16), for comparison with the
 * one fw_cfg holds. */
#define MULTIBOOT_INFO_CMDLINE (1u << 2)

static void probe_multiboot_cmdline(void)
{
	const uint32_t *info = (const uint32_t *)multiboot_info;

	if (info[0] & MULTIBOOT_INFO_CMDLINE)
		kprintf("probe: multiboot.cmdline = %s\n", (const char *)info[4]);
	else
		kprintf("probe: multiboot.cmdline = (none)\n");
}

int guest_main(void)
{
	kprintf("fw-probe: start\n");
	probe_multiboot_cmdline();
	probe_fw_cfg();
	probe_acpi();
	probe_cpuid();
	probe_msrs();
	kprintf("fw-probe: done\n");
	return 0;
}
