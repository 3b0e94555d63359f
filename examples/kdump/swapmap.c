/*
 * swapmap.c - where the first kernel's memory is while a kexec jump is in progress.
 *
 * For a preserve-context image the relocation routine exchanged every destination page D
 * with its source page S (SPEC 7.6): during the jump S holds what the first kernel had at D,
 * and D holds the image. The routine keeps the indirection list's head word in its control
 * page's data area (offset 2048 + 0x1C, as 2.6.27's relocate_kernel_32.S does), and the
 * jump-back entry it called us with lies in that control page's code, so the list can be
 * walked again here exactly as the routine walks it: DESTINATION sets D, INDIRECTION goes on
 * at another page, DONE stops, SOURCE pairs D with S and advances D by a page.
 *
 * swapmap_lookup(A) answers "which physical page holds what belongs at A in the snapshot":
 * S for a destination page D (the first kernel's bytes); D for a source page S (S is a page
 * kexec staged the image in: after the jump back it holds the image's pages, which are at D
 * now); A itself for every other page.
 */
#include "capture.h"

#define CONTROL_DATA		2048u
#define DATA_CONTROL_VA		0x10u
#define DATA_SWAP_PAGE		0x18u
#define DATA_HEAD		0x1cu
#define KERNEL_PAGE_OFFSET	0xc0000000u

#define IND_DESTINATION	0x1u
#define IND_INDIRECTION	0x2u
#define IND_DONE	0x4u
#define IND_SOURCE	0x8u

/* 16384 pairs: the jump may exchange up to 64 MiB (the image and its backup segments). */
#define MAX_PAIRS 16384u
#define MAX_WORDS (MAX_PAIRS * 4u)

struct pair {
	u32 key;
	u32 value;
};

static struct pair by_dest[MAX_PAIRS], by_source[MAX_PAIRS];
static u32 nr_pairs;

static void sift_down(struct pair *a, u32 root, u32 n)
{
	for (;;) {
		u32 child = 2 * root + 1;
		struct pair t;

		if (child >= n)
			return;
		if (child + 1 < n && a[child + 1].key > a[child].key)
			child++;
		if (a[root].key >= a[child].key)
			return;
		t = a[root];
		a[root] = a[child];
		a[child] = t;
		root = child;
	}
}

static void heap_sort(struct pair *a, u32 n)
{
	u32 i;

	for (i = n / 2; i-- > 0;)
		sift_down(a, i, n);
	for (i = n; i-- > 1;) {
		struct pair t = a[0];

		a[0] = a[i];
		a[i] = t;
		sift_down(a, 0, i);
	}
}

/*
 * Is jump_back the entry of a relocation routine in the middle of a kexec jump? Its page
 * is then a control page: code below offset 2048, and the data area records the page's
 * own kernel virtual address. A crash or plain kexec leaves no such word at [ESP].
 */
static int in_control_page(u32 jump_back)
{
	u32 page = jump_back & PAGE_MASK;
	const u32 *data = (const u32 *)(page + CONTROL_DATA);

	return (jump_back & ~PAGE_MASK) < CONTROL_DATA
	       && data[DATA_CONTROL_VA / 4] - KERNEL_PAGE_OFFSET == page;
}

int swapmap_build(u32 jump_back)
{
	const u32 *data, *next = 0;
	u32 word, dest = 0, steps;

	if (!in_control_page(jump_back))
		return 0;
	can_return = 1;			/* from here on a failure goes back, not down */
	data = (const u32 *)((jump_back & PAGE_MASK) + CONTROL_DATA);
	word = data[DATA_HEAD / 4];
	nr_pairs = 0;
	for (steps = 0; steps < MAX_WORDS; steps++) {
		if (word & IND_DESTINATION) {
			dest = word & PAGE_MASK;
		} else if (word & IND_INDIRECTION) {
			next = (const u32 *)(word & PAGE_MASK);
		} else if (word & IND_DONE) {
			break;
		} else if (word & IND_SOURCE) {
			if (nr_pairs == MAX_PAIRS)
				fail("too many swapped pages, limit", MAX_PAIRS);
			by_dest[nr_pairs].key = dest;
			by_dest[nr_pairs].value = word & PAGE_MASK;
			by_source[nr_pairs].key = word & PAGE_MASK;
			by_source[nr_pairs].value = dest;
			nr_pairs++;
			dest += PAGE_SIZE;
		}
		if (!next)
			break;
		word = *next++;
	}
	if (steps == MAX_WORDS)
		fail("indirection list without an end after words", steps);
	heap_sort(by_dest, nr_pairs);
	heap_sort(by_source, nr_pairs);
	return 1;
}

static int search(const struct pair *a, u32 n, u32 key, u32 *value)
{
	u32 lo = 0, hi = n;

	while (lo < hi) {
		u32 mid = lo + (hi - lo) / 2;

		if (a[mid].key == key) {
			*value = a[mid].value;
			return 1;
		}
		if (a[mid].key < key)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}

u32 swapmap_lookup(u32 page)
{
	u32 other;

	if (search(by_dest, nr_pairs, page, &other) || search(by_source, nr_pairs, page, &other))
		return other;
	return page;
}
