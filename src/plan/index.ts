export * from "./model.js";
export { planJson, renderPlan } from "./render.js";
