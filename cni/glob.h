/* SPDX-License-Identifier: MIT */
/*
 * The globs intercept's policies use for namespace and interface names
 * (src/glob.ts): '*' is any run of characters, '?' one character, and
 * everything else stands for itself (fnmatch(3) would read '[' and '\').
 */
#ifndef INTERCEPT_CNI_GLOB_H
#define INTERCEPT_CNI_GLOB_H

int glob_match(const char *glob, const char *name);

#endif /* INTERCEPT_CNI_GLOB_H */
