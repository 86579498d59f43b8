import { definePolicy } from "intercept";

export default definePolicy({
  interceptors: [{ originalPort: 8000, port: 9000 }
