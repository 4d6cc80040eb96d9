"""Push an image manifest to ECR (the emulated account's), as `docker push` would register it.

Called by images.tf's local-exec with REPOSITORY, TAG, REGION and MANIFEST (empty: a minimal
schema 2 manifest unique to the repository and tag); the endpoint is AWS_ENDPOINT_URL.
"""

import hashlib
import json
import os

import boto3

repository, tag = os.environ["REPOSITORY"], os.environ["TAG"]
manifest = os.environ.get("MANIFEST") or json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": 2,
            "digest": "sha256:" + hashlib.sha256(f"{repository}:{tag}".encode()).hexdigest(),
        },
        # moto's ECR derives the digest from the layers: one of its own per repository and tag.
        "layers": [
            {
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "size": 1,
                "digest": "sha256:"
                + hashlib.sha256(f"layer {repository}:{tag}".encode()).hexdigest(),
            }
        ],
    }
)
ecr = boto3.client("ecr", region_name=os.environ["REGION"])
pushed = ecr.put_image(repositoryName=repository, imageTag=tag, imageManifest=manifest)
print(f"pushed {repository}:{tag} {pushed['image']['imageId']['imageDigest']}")
