"""The lessons' stack in containers: one image, compose services and Kubernetes manifests.

Everything here is derived from the lesson manifest and the lesson's own configs, through one rendering
step (`render`): each upstream `server 0.0.0.0:PORT;` of nginx/lesson-N.conf, and each endpoint on a
lesson server's port in lesson 13's Envoy twin of the lesson, becomes the name a container reaches that
backend by. Which name belongs to which port comes from the lesson's checkpoint step (server1 listens on
50051, ...), so no address is written twice.

* `render`: the lesson's plan (its servers, nginx config, client, Envoy twin) and the rendering.
* `roles`: what each container execs. In compose (deploy/compose.yaml) every container runs
  ``python -m pcbook.workbook.deploy run ROLE`` with ``PCBOOK_LESSON=N`` (default 5): a server role execs
  the pcbook server with the lesson's flags, ``nginx`` (and ``envoy``) renders its config with the compose
  service names and execs the proxy, ``client`` (``client-envoy``) execs the client against it.
* `k8s`: ``python -m pcbook.workbook.deploy k8s`` writes deploy/k8s/ from the same configs (tests check
  the committed files are what it writes); ``k8s-secret`` prints the TLS Secret from certs/ (keys never go
  into a committed file).
* `__main__`: the command line, the image's entry point.
"""
