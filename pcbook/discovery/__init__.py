"""What stands between a registry and the clients: the xDS control plane (lesson 12's look-aside balancer)
and nginx_sync (lesson 11: nginx's upstream rendered from etcd). The registry client and the thick client,
which the server and the clients use themselves, are in pcbook.service."""
