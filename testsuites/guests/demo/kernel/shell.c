/*
 * shell.c: the shell, a kernel thread.
 *
 * It reads a line from the console, splits it into words, and looks the
 * first word up in `commands`. It runs in ring 0 because its commands
 * need more than the seven system calls a user program has: starting
 * programs, listing processes, powering off. A program it starts is a
 * child process, in ring 3, which the shell waits for (or not, given &).
 */
#include "kernel.h"

#define MAX_WORDS 4
#define PROMPT "ringside$ "

struct command {
	const char *name;
	const char *usage;
	void (*run)(int argc, char **argv);
};

static const struct command commands[];

const struct program *program_find(const char *name)
{
	for (int i = 0; i < program_count; i++)
		if (strcmp(programs[i].name, name) == 0)
			return &programs[i];
	return NULL;
}

/* Starts a program; in the foreground, waits for it and returns its
 * exit status. */
static int run_program(const char *name, int background)
{
	const struct program *prog = program_find(name);
	struct proc *p;
	int pid, status;

	if (!prog) {
		kprintf("run: no program '%s' (try 'help')\n", name);
		return -1;
	}
	p = spawn_user(prog->name, prog->image, prog->size);
	if (!p) {
		kprintf("run: cannot start %s: out of memory or processes\n", name);
		return -1;
	}
	pid = p->pid;
	if (background) {
		kprintf("[%d] %s\n", pid, name);
		return 0;
	}
	proc_wait(pid, &status);
	if (status != 0)
		kprintf("[%d] %s: exit status %d\n", pid, name, status);
	return status;
}

static void cmd_help(int argc, char **argv)
{
	(void)argc, (void)argv;
	kprintf("commands:\n");
	for (const struct command *c = commands; c->name; c++)
		kprintf("  %-22s %s\n", c->name, c->usage);
	kprintf("programs:");
	for (int i = 0; i < program_count; i++)
		kprintf(" %s", programs[i].name);
	kprintf("\n");
}

static void cmd_ps(int argc, char **argv)
{
	(void)argc, (void)argv;
	proc_list();
	kprintf("%u pages of memory free\n", kalloc_free_pages());
}

static void cmd_run(int argc, char **argv)
{
	int background = argc == 3 && strcmp(argv[2], "&") == 0;

	if (argc != 2 && !background) {
		kprintf("usage: run PROGRAM [&]\n");
		return;
	}
	run_program(argv[1], background);
}

static void print_ticks(uint32_t t)
{
	kprintf("%u ticks (%u.%02u s)\n", t, t / 100, t % 100);
}

/* The time is in ticks of the 100 Hz timer, counted by the kernel from
 * the start of the program to its exit. */
static void cmd_bench(int argc, char **argv)
{
	const char *program = argc > 1 && strcmp(argv[1], "small") == 0 ? "bench-small" : "bench";
	uint32_t start = ticks;

	if (run_program(program, 0) == 0) {
		kprintf("%s: ", program);
		print_ticks(ticks - start);
	}
}

static void cmd_uptime(int argc, char **argv)
{
	(void)argc, (void)argv;
	kprintf("up ");
	print_ticks(ticks);
}

static void cmd_poweroff(int argc, char **argv)
{
	(void)argc, (void)argv;
	kprintf("Powering off.\n");
	poweroff(0);
}

static const struct command commands[] = {
	{ "help", "this list", cmd_help },
	{ "ps", "list the processes", cmd_ps },
	{ "run PROGRAM [&]", "run a user program (with &: in the background)", cmd_run },
	{ "bench [small]", "run the integer benchmark, print its checksum and time", cmd_bench },
	{ "uptime", "time since boot", cmd_uptime },
	{ "poweroff", "stop the machine", cmd_poweroff },
	{ NULL, NULL, NULL },
};

/* Splits line in place at spaces; returns the number of words. */
static int split_words(char *line, char **words)
{
	int n = 0;

	while (*line && n < MAX_WORDS) {
		while (*line == ' ')
			*line++ = '\0';
		if (!*line)
			break;
		words[n++] = line;
		while (*line && *line != ' ')
			line++;
	}
	return n;
}

/* A command's name is the first word of its usage line. */
static int command_is(const struct command *c, const char *word)
{
	size_t n = strlen(word);

	return memcmp(c->name, word, n) == 0 && (c->name[n] == '\0' || c->name[n] == ' ');
}

void shell(void)
{
	char line[128];
	char *words[MAX_WORDS];

	kprintf("Type 'help' for the commands.\n");
	for (;;) {
		int pid, status, n, argc;
		const struct command *c;

		/* The shell runs in ring 0, where the timer does not preempt
		 * it (trap.c); when input is already waiting it never sleeps.
		 * Let programs running in the background have the CPU first. */
		yield();
		while (proc_reap_any(&pid, &status))
			kprintf("[%d] done, exit status %d\n", pid, status);
		kprintf(PROMPT);
		n = console_read(line, sizeof(line) - 1);
		line[n] = '\0';
		if (n > 0 && line[n - 1] == '\n')
			line[n - 1] = '\0';
		argc = split_words(line, words);
		if (argc == 0)
			continue;
		for (c = commands; c->name && !command_is(c, words[0]); c++)
			;
		if (c->name)
			c->run(argc, words);
		else
			kprintf("%s: unknown command (try 'help')\n", words[0]);
	}
}
