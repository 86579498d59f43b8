export * from "./model.js";
export { describeWarning, planJson, renderPlan } from "./render.js";
