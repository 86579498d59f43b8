// The namespace lock is the Host port's (src/host/lock.ts); apply and destroy take it from here.
export {
  LOCK_DIR,
  lockFile,
  lockNamespace,
  type LockHolder,
  type LockOptions,
  type NamespaceLock,
} from "../host/lock.js";
