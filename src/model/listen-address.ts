/** An address the agent can listen on for metrics (the CLI's --metrics, parsed). */
export interface ListenAddress {
  host: string;
  port: number;
}
