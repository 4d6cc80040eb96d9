# --- Application load balancer in front of the API tasks ---------------------------------

resource "aws_lb" "api" {
  #checkov:skip=CKV_AWS_91:Access logs need an S3 bucket with its own policy and lifecycle; the API's structured request log (request_id, status, duration) is in CloudWatch Logs already.
  #checkov:skip=CKV2_AWS_28:A WAF costs more than this course deployment's whole stack; enable one in front of real traffic.
  #checkov:skip=CKV2_AWS_20:HTTP is redirected to HTTPS only when var.certificate_arn is set; the practical serves plain HTTP.
  name                       = "${var.name}-api"
  load_balancer_type         = "application"
  internal                   = false
  security_groups            = [aws_security_group.alb.id]
  subnets                    = local.subnet_ids
  drop_invalid_header_fields = true
  enable_deletion_protection = var.deletion_protection
}

resource "aws_lb_target_group" "api" {
  #checkov:skip=CKV_AWS_378:TLS ends at the load balancer; the tasks are reachable only from its security group.
  name        = "${var.name}-api"
  port        = local.api_port
  protocol    = "HTTP"
  target_type = "ip"
  vpc_id      = local.vpc_id
  # Long enough for in-flight requests; uvicorn finishes them on SIGTERM.
  deregistration_delay = 15

  health_check {
    path                = local.health_path
    port                = "traffic-port"
    matcher             = "200"
    interval            = 15
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }
}

resource "aws_lb_listener" "http" {
  #checkov:skip=CKV_AWS_2:Plain HTTP is the practical's default; with var.certificate_arn this listener only redirects to HTTPS.
  #checkov:skip=CKV_AWS_103:Same: TLS applies to the HTTPS listener, created when a certificate is given.
  load_balancer_arn = aws_lb.api.arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type             = var.certificate_arn == null ? "forward" : "redirect"
    target_group_arn = var.certificate_arn == null ? aws_lb_target_group.api.arn : null

    dynamic "redirect" {
      for_each = var.certificate_arn == null ? [] : [1]
      content {
        port        = "443"
        protocol    = "HTTPS"
        status_code = "HTTP_301"
      }
    }
  }
}

resource "aws_lb_listener" "https" {
  count             = var.certificate_arn == null ? 0 : 1
  load_balancer_arn = aws_lb.api.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.api.arn
  }
}
