import { definePolicy } from "intercept-bpf";

const proxy = 0;

export default definePolicy({
  interceptors: [{ originalPort: 8000, port: proxy }, { originalPort: 8000, port: 9001 }],
});
