/* programs.h — the two tc programs. Both always return TC_ACT_UNSPEC: they
 * rewrite in place and hand the packet on, so a filter attached after ours
 * still runs and no packet is ever dropped here. */

/* intercept_ingress — a packet arriving for a rule's originalPort is sent
 * to the rule's port instead (destination port rewrite). */
SEC("tc")
int intercept_ingress(struct __sk_buff *skb)
{
	struct l4_packet pkt;
	struct rule_match match;

	if (parse_packet(skb, &pkt) < 0 || !match_ingress(&pkt, &match))
		return TC_ACT_UNSPEC;
	if (rule_enabled(match.rule) && rewrite_port(skb, &pkt, PORT_DESTINATION, match.new_port) == 0)
		count_packet(match.rule, DIR_INGRESS, skb->len);
	return TC_ACT_UNSPEC;
}

/* intercept_egress — a reply leaving from a rule's port goes out with the
 * originalPort the client asked for (source port rewrite). */
SEC("tc")
int intercept_egress(struct __sk_buff *skb)
{
	struct l4_packet pkt;
	struct rule_match match;

	if (parse_packet(skb, &pkt) < 0 || !match_egress(&pkt, &match))
		return TC_ACT_UNSPEC;
	if (rule_enabled(match.rule) && rewrite_port(skb, &pkt, PORT_SOURCE, match.new_port) == 0)
		count_packet(match.rule, DIR_EGRESS, skb->len);
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
