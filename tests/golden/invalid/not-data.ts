import { definePolicy } from "intercept-bpf";

const base = 8000;
const key = "port";
let mutable = 9000;
function pick() {
  return 9001;
}

export default definePolicy({
  interceptors: [
    { originalPort: base + 1, port: 9000 },
    { originalPort: Number(process.env.PORT), port: 9001 },
    { originalPort: 8002, [key]: 9002 },
    { originalPort: 8003, port: pick() },
    { originalPort: 8004, port: 9004, description: `port ${base}` },
    { originalPort: 8005, port: mutable },
  ],
});
