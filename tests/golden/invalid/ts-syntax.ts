import { definePolicy } from "intercept-bpf";

export default definePolicy({
  interceptors: [{ originalPort: 8000, port: 9000 }
