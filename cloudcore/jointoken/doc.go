// Package jointoken keeps the tokens edge nodes join with, one Kubernetes
// bootstrap-token Secret per token, so that `kubectl get secrets -n
// kube-system` lists them and deleting one revokes it.
//
// A token is the Secret kube-system/bootstrap-token-<id> of type
// bootstrap.kubernetes.io/token with the data
//
//	token-id                     <id>: 6 characters a-z, 0-9
//	token-secret                 <secret>: 16 characters a-z, 0-9, from crypto/rand
//	expiration                   RFC 3339, UTC
//	description                  free text
//	usage-bootstrap-tether-join  "true": what makes it a Tether join token
//	tether-uses-left             uses left, a decimal; absent: no limit
//	tether-node                  the only node name it may join; absent: any
//
// It never carries usage-bootstrap-authentication or usage-bootstrap-signing,
// so the API server's bootstrap authenticator never accepts it: the token
// lets a node ask cloudcore to join, and nothing else. kube-controller-manager's
// tokencleaner controller, where enabled, deletes expired tokens.
//
// The hub's join handler calls Check first, cheaply and without writing, to
// refuse a bad token before any expensive work, then Consume as the last
// step before it hands the node its certificate; if Consume fails the
// certificate is not sent. Only Consume decides: a token Check accepted may
// have been used up or deleted since. Consume spends a use with an Update
// conditioned on the Secret's resourceVersion, retried on conflict, so
// replicas of cloudcore consuming at once never spend more uses than there
// are.
//
// The string an operator hands to the edge, the join token, is the
// bootstrap token "<id>.<secret>" followed by the pin of the cloud's CA
// (JoinString); its format lives in package pki, which the edge imports too.
package jointoken
