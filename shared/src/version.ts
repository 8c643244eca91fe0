export const SHADOWVM_VERSION = "0.1.0";
