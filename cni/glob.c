// SPDX-License-Identifier: MIT
#include "glob.h"

/* Backtracking to the last '*' only: linear in practice, never exponential. */
int glob_match(const char *glob, const char *name)
{
	const char *star = 0, *resume = 0;

	while (*name) {
		if (*glob == '*') {
			star = glob++;
			resume = name;
		} else if (*glob == '?' || *glob == *name) {
			glob++;
			name++;
		} else if (star) {
			glob = star + 1;
			name = ++resume;
		} else {
			return 0;
		}
	}
	while (*glob == '*')
		glob++;
	return *glob == '\0';
}
