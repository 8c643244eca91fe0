export const SHADOWVM_VERSION = "0.1.0";
export * from "./cli/table.js";
export * from "./config/load-config.js";
export * from "./errors.js";
export * from "./failures/index.js";
export * from "./log/logger.js";
export * from "./stress-profile.js";
export * from "./wait-for.js";
export * from "./wire/index.js";
