import { definePolicy } from "intercept";

export default definePolicy({
  interceptors: [{ orignalPort: 8000, port: 9000 }],
});
