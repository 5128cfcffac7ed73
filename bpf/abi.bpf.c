// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * Never loaded. A BTF anchor: one variable whose type names every struct
 * and enum of abi.h, so the build-time check (bpf/check-abi.ts) finds
 * them all in this object's BTF, constants included, even those no program
 * happens to use. The program objects' own BTF is checked too.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "abi.h"

struct kpr_abi {
	struct nat_fe_key nat_fe_key;
	struct nat_fe_val nat_fe_val;
	struct nat_be_key nat_be_key;
	struct nat_be_val nat_be_val;
	struct sk_lb_state sk_lb_state;
	struct sk_nat_key sk_nat_key;
	struct sk_nat_val sk_nat_val;
	struct aff_key aff_key;
	struct aff_val aff_val;
	struct svc_meta svc_meta;
	struct ct_key ct_key;
	struct ct_val ct_val;
	struct frag_key frag_key;
	struct frag_val frag_val;
	struct kpr_config kpr_config;
	struct kpr_sock_config kpr_sock_config;
	struct lpm_v4_key lpm_v4_key;
	struct sock_destroy_key sock_destroy_key;
	struct sock_destroy_rec sock_destroy_rec;
	struct nat_fe6_key nat_fe6_key;
	struct nat_be6_val nat_be6_val;
	struct sk_lb6_state sk_lb6_state;
	struct sk_nat6_key sk_nat6_key;
	struct sk_nat6_val sk_nat6_val;
	struct aff6_key aff6_key;
	struct aff6_val aff6_val;
	struct ct6_key ct6_key;
	struct ct6_val ct6_val;
	struct sock_destroy6_key sock_destroy6_key;
	struct kpr_config6 kpr_config6;
	struct node_ip6_key node_ip6_key;
	struct lpm_v6_key lpm_v6_key;
	struct frag6_key frag6_key;
	enum nat_fe6_prefix nat_fe6_prefix;
	enum nat_fe_prefix nat_fe_prefix;
	enum nat_fe_flag nat_fe_flag;
	enum nodeport_mode nodeport_mode;
	enum kpr_config6_flag kpr_config6_flag;
	enum nat_fe_special nat_fe_special;
	enum nat_be_ordinal nat_be_ordinal;
	enum nat_be_flag nat_be_flag;
	enum sk_lb_const sk_lb_const;
	enum aff_client_kind aff_client_kind;
	enum ct_type ct_type;
	enum ct_flag ct_flag;
	enum ct_tcp_flag ct_tcp_flag;
	enum kpr_stat kpr_stat;
	struct maglev_chunk maglev_chunk;
	enum maglev_const maglev_const;
};

struct kpr_abi kpr_abi SEC(".kpr_abi");

char _license[] SEC("license") = "Dual BSD/GPL";
