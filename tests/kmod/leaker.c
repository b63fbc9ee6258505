// SPDX-License-Identifier: GPL-2.0
/*
 * leaker.c - a test module that leaks on purpose: the positive control of
 * tests/guest/vm.sh's kmemleak check. Loading it allocates objects and
 * forgets the only pointers to them, so the next kmemleak scans must report
 * unreferenced objects allocated from leaker_alloc. If they do not,
 * kmemleak is not working and "no leak from rvmx" would prove nothing.
 * The module stays loaded until the scans are read (kmemleak names the
 * functions of a backtrace when the report is read), then rmmod.
 */
#include <linux/module.h>
#include <linux/slab.h>

/* Not __init: its name must still resolve when kmemleak's report is read. */
static noinline void leaker_alloc(void)
{
	void *p = kmalloc(200, GFP_KERNEL);

	/* Keep the compiler from dropping the allocation. */
	if (p)
		memset(p, 0x5a, 200);
}

/*
 * Sixteen objects: kmemleak is conservative, and a stale copy of a pointer
 * (in a register spill or a dead stack slot) hides its object. At most
 * the last one can be left that way.
 */
static int __init leaker_init(void)
{
	int i;

	for (i = 0; i < 16; i++)
		leaker_alloc();
	pr_info("leaker: leaked sixteen 200-byte objects on purpose\n");
	return 0;
}

static void __exit leaker_exit(void)
{
}

module_init(leaker_init);
module_exit(leaker_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("rvmx test: a deliberate leak for kmemleak");
