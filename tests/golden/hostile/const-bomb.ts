// The billion laughs with consts: each lists the previous one ten times.
import { definePolicy } from "intercept-bpf";

const l0 = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1];
const l1 = [l0, l0, l0, l0, l0, l0, l0, l0, l0, l0];
const l2 = [l1, l1, l1, l1, l1, l1, l1, l1, l1, l1];
const l3 = [l2, l2, l2, l2, l2, l2, l2, l2, l2, l2];
const l4 = [l3, l3, l3, l3, l3, l3, l3, l3, l3, l3];
const l5 = [l4, l4, l4, l4, l4, l4, l4, l4, l4, l4];
const l6 = [l5, l5, l5, l5, l5, l5, l5, l5, l5, l5];
const l7 = [l6, l6, l6, l6, l6, l6, l6, l6, l6, l6];
const l8 = [l7, l7, l7, l7, l7, l7, l7, l7, l7, l7];

export default definePolicy({ interceptors: [], description: l8 });
